"""The radiomics baseline of Li et al. 2022 (after Sun et al. 2020): PyRadiomics intensity
and texture features of each RoI, Boruta feature selection per task on the training split,
and a random forest per task, trained and evaluated on exactly the CNN's splits.

Modules by job: :mod:`.options` (the config keys), :mod:`.extraction` (PyRadiomics, in
parallel), :mod:`.cache` (features on disk per image and setting), :mod:`.model` (Boruta
and the forest), :mod:`.plugin` (the baseline, the ``mtl radiomics`` command, the hooks).
PyRadiomics and Boruta are an optional extra, imported only when features are extracted
or models fitted: ``pip install -e ".[radiomics]"``.
"""

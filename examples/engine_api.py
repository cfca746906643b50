"""Drive mtlkit from Python: build an engine, train, evaluate, predict.

python examples/engine_api.py
"""

from __future__ import annotations

from pathlib import Path

from mtlkit import Engine

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "quick.yaml"


def main() -> None:
    engine = Engine.from_yaml(CONFIG, overrides=["training.epochs=2", "data.source.patients=60"])
    fit = engine.fit()
    print(
        f"best epoch {fit.best_epoch}, validation score {fit.best_score:.3f}, "
        f"{fit.train_images_per_second:.0f} training images/s"
    )

    test = engine.evaluate("test")
    for task, metrics in test.tasks.items():
        print(f"{task:10s} AUC {metrics['auc']:.3f}  (oracle {metrics['reference_auc']:.3f})")

    # Score new RoI crops (2-D uint8 arrays); here the first test images' cached RoIs.
    rois = [engine.data.cache[int(i), 0].numpy() for i in engine.data.indices("test")[:4]]
    for task, probabilities in engine.predict(rois).items():
        print(task, probabilities.round(3))


if __name__ == "__main__":
    main()

"""The component system: hook specs, the plugin host, typed registries, the component contracts
and their checks, and the resolution of a config into live components."""

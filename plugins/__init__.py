"""mtlkit's built-in plugins, loaded through the ``mtlkit`` entry points like any other."""

# Loads the harness plugin when the project is used from a checkout without being installed (an installed
# package registers it through its pytest11 entry point under this same name, so it is never loaded twice).
# pytester runs the end-to-end tests of the plugin itself.
pytest_plugins = ["harness.plugin", "pytester"]

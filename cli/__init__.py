"""The ``regkit`` command line (installed as the package ``regkit.cli``). A thin shell over the
Python API: each command lives in its own module and imports the library lazily."""

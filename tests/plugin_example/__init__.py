"""An example plug-in package: see my_tasks.py."""

"""The `astrofm` command line: a thin front door that imports each command's code only when run."""

"""stagesearch: the `stagesearch` command, one entry point over the search, the registry and the dashboards."""

"""stagesearch: search."""

"""stagesearch: spaces."""

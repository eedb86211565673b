"""stagesearch: trainers."""

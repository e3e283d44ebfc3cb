"""A run on disk: the run folder, the plan, training its networks, gathering and scoring them."""

"""One evaluation run: tasks as configured, the evaluation context, the runner."""

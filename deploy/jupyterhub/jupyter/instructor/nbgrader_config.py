"""nbgrader for the instructor's server: the course folder (its own nbgrader_config.py is the
repository's, with genlab's grading preprocessors)."""

import os

c = get_config()  # noqa: F821

c.CourseDirectory.root = os.environ.get("GENLAB_COURSE_ROOT", os.path.expanduser("~/course"))

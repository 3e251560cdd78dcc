"""nbgrader for every account on the course hub: the exchange and the course id."""

import os

c = get_config()  # noqa: F821

c.Exchange.root = os.environ.get("GENLAB_EXCHANGE", "/srv/nbgrader/exchange")
c.CourseDirectory.course_id = os.environ.get("GENLAB_COURSE_ID", "genlab")
# A submission stays 0755 (nbgrader leaves it 0777); collect refuses one whose owner is not the
# student its name claims (see genlab.classroom.hub).
c.ExchangeFactory.submit = "genlab.classroom.hub.OwnSubmit"
c.ExchangeFactory.collect = "genlab.classroom.hub.OwnerCheckedCollect"
# "Validate" runs the whole chapter: cells that train need more than nbgrader's 30 s.
c.Execute.timeout = 300

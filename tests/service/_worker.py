"""One server worker process over a shared project state (RELIABILITY B5).

``python -m tests.service._worker STATE PORT`` builds the demo assistant (with the test
``hold`` skill) over ``STATE`` and serves it with the shipped uvicorn configuration on
127.0.0.1:PORT; the widget key comes from ``LLMOS_TEST_WIDGET_KEY``. Two of these over one
state directory are what ``llmos serve --workers 2`` runs: two processes, one database.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def main(argv: list[str]) -> None:
    import uvicorn

    from assistant.api import Assistant
    from assistant.project import DEMO_ROOT, Project
    from assistant.server import ServerSettings, create_app, tune_process, uvicorn_options
    from tests.service.conftest import HoldSkill, assert_loopback

    state, port = Path(argv[1]), int(argv[2])
    assert_loopback("127.0.0.1")
    settings = ServerSettings(port=port, demo_key=False, turn_timeout_s=60)
    tune_process(settings)
    bot = Assistant(
        Project(root=DEMO_ROOT, state=state, is_demo=True),
        entry_points=False,
        language_model=False,
        extra_skills=[HoldSkill()],
    )
    app = create_app(bot, settings=settings)
    secret = os.environ["LLMOS_TEST_WIDGET_KEY"]
    app.state.keys.create_ephemeral("widget", name="worker", rate_per_min=1e6, secret=secret)
    opts = uvicorn_options(settings, "warning")
    opts["log_config"] = None
    try:
        uvicorn.run(app, **opts)
    finally:
        bot.close()


if __name__ == "__main__":
    main(sys.argv)

"""A third-party skill package, installed with pip, is discovered and routed to."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_weather_example_is_installed_discovered_and_routed(tmp_path, project_dir):
    target = tmp_path / "site"
    pip = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--target",
            str(target),
            str(REPO / "examples" / "weather_skill"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert pip.returncode == 0, pip.stderr
    script = textwrap.dedent(
        f"""
        import json
        from assistant import Assistant
        bot = Assistant.from_project({str(project_dir)!r}, knowledge=False, language_model=False)
        r = bot.chat("what's the weather in Berlin?")
        print(json.dumps({{"skill": r.skill, "text": r.text, "skills": bot.registry.names(),
                          "errors": bot.registry.errors}}))
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), str(REPO)])}
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600
    )
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert "weather" in res["skills"]
    assert res["skill"] == "weather"
    assert "Berlin" in res["text"]

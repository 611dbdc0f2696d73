"""The HTML report renders in headless Chromium into a non-trivial picture."""

from __future__ import annotations

import pytest

from experiments import AnalysisOptions, SyntheticWorld, analyze, parse_experiment, render_html, synthetic_logs

pytestmark = pytest.mark.integration


def test_html_report_renders_in_chromium(tmp_path, screenshot):
    exp = parse_experiment({"id": "shot", "status": "running", "description": "Reserve price test",
                            "arms": [{"name": "control", "weight": 1}, {"name": "reserve", "weight": 1,
                                                                         "params": {"reserve": 0.8}}]})
    ex, fb = synthetic_logs(exp, SyntheticWorld(arm_ctr={"control": 0.05, "reserve": 0.06}, units=2000), seed=2)
    page = tmp_path / "report.html"
    page.write_text(render_html(analyze(exp, ex, fb, options=AnalysisOptions(timeline_points=6)), golden_ok=True))
    png = tmp_path / "report.png"
    res = screenshot(page, png)
    assert png.exists(), f"chromium wrote no screenshot (exit {res.returncode}): {res.stderr[-2000:]}"
    import matplotlib.image as mpimg
    import numpy as np

    img = mpimg.imread(png)
    assert img.shape[0] >= 1900 and img.shape[1] >= 1200
    rgb = img[..., :3]
    assert png.stat().st_size > 50_000
    assert rgb.std() > 0.05                                   # not a blank page
    colours = np.unique((rgb[::8, ::8] * 255).astype(np.uint8).reshape(-1, 3), axis=0)
    assert len(colours) > 50                                  # plots and styled text, not an error page
    # the decision box colour (ship green / don't-ship red / keep-running amber) is on the page
    box = {(0x1b, 0x7f, 0x4b), (0xb3, 0x26, 0x1e), (0x8a, 0x61, 0x00)}
    assert any(tuple(c) in box for c in (rgb[:700] * 255).round().astype(np.uint8).reshape(-1, 3)[::3].tolist())

"""The dashboard's download row while a job waits out the Hub's rate limit."""

from __future__ import annotations

from tui.app.views import JobView

from tests.support.app import make_app, wait_for, wait_ready


def _text(row, cls: str) -> str:
    return str(row.query_one(cls).render())


async def test_a_waiting_job_shows_what_it_waits_for_and_the_seconds(services) -> None:
    app = make_app(services)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_ready(app, pilot)
        for left in (42, 41):  # one event a second while it waits
            app.post_job(JobView("j1", "acme/big:Q4_K_M", "waiting", 0, 4_000,
                                 wait_for="the Hub's rate limit", wait_s=left))
            await pilot.pause()
        panel = app.downloads_panel
        assert await wait_for(pilot, lambda: panel.row_for("j1") is not None and _text(
            panel.row_for("j1"), ".job-state") == "waiting 41s")
        row = panel.row_for("j1")
        assert row.has_class("-waiting")
        assert _text(row, ".job-speed") == "the Hub's rate limit"
        assert panel.active_count == 1  # still going: it resumes by itself
        app.post_job(JobView("j1", "acme/big:Q4_K_M", "downloading", 1_000, 4_000, 1e6, 3))
        assert await wait_for(pilot, lambda: _text(row, ".job-state") == "downloading")
        assert not row.has_class("-waiting")

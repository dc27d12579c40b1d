"""Where a Ray Train job's wall time went, from rank 0's moments and the driver's clock around the job."""

import pytest

from pipeline.orchestrator.job_timings import TIMINGS, job_timings, worker_moments


def test_a_jobs_four_parts_add_up_to_its_wall_time():
    timings = job_timings(
        worker_moments(started=103.0, ready=110.0, trained=150.0), submitted=100.0, ended=152.5
    )
    assert set(timings) == set(TIMINGS)
    assert (timings["ray_start_s"], timings["worker_setup_s"], timings["compute_s"]) == (3.0, 7.0, 40.0)
    assert timings["ray_finish_s"] == pytest.approx(2.5)
    parts = sum(timings[k] for k in ("ray_start_s", "worker_setup_s", "compute_s", "ray_finish_s"))
    assert parts == pytest.approx(timings["ray_job_s"]) == pytest.approx(52.5)


def test_a_restarted_group_that_handed_back_a_finished_set_reports_only_the_jobs_wall_time():
    assert job_timings({"done": 1, "resumed_epochs": -1}, submitted=100.0, ended=104.0) == {"ray_job_s": 4.0}

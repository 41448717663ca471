"""What a run says: its start, each evaluation and its closing table."""

from mtl_jax import report

FINAL = {"val/digit/accuracy": 0.95, "val/digit/loss": 0.18, "test/digit/accuracy": 0.9694,
         "test/digit/loss": 0.1135, "val/x/mae": 0.25, "weight/digit": 1.0, "weight/x": 0.5}


def test_the_table_has_a_row_per_task_and_metric_and_a_column_per_split():
  assert report.metrics_table(FINAL).splitlines() == [
      "task   metric       val    test",
      "-----  --------  ------  ------",
      "digit  accuracy  0.9500  0.9694",
      "digit  loss      0.1800  0.1135",
      "x      mae       0.2500       -",
      "task weights at the last step: digit 1, x 0.5"]


def test_an_evaluation_line_shows_each_tasks_first_metric_that_is_not_its_loss():
  values = {"val/digit/loss": 0.2, "val/digit/accuracy": 0.9, "val/age/loss": 3.0}
  assert report.evaluation_line(500, values) == "val at step 500: digit accuracy 0.9, age loss 3"


def test_start_messages_say_whether_the_run_resumes():
  assert report.starting(0, 2000, "/w") == "training 2,000 steps in /w"
  assert report.starting(400, 2000, "/w") == "resuming from step 400 of 2,000 in /w"
  assert report.already_finished(2000, "/w") == "already finished at step 2,000; results in /w"

"""The label-feedback job of one served model: a CronJob running `python -m mlops.feedback evaluate`.

    feedback-<model>  CronJob  python -m mlops.feedback evaluate --model M --alias A --metric f1|accuracy …

It joins the request sample the model's pods write (modules/serving/mlserver-image/mlops_mlserver.py
`InferenceSampler`) with the labels the label source stores beside it (`<log-uri>/<model>/feedback/`)
by request id, and pushes accuracy or F1 as `model_quality_<metric>` to the Pushgateway, where
ModelQualityDegraded and ModelQualityStale read it (docs/decisions/0018-label-feedback.md). It needs
no MLflow login: everything it reads is under the sample's prefix, with the drift job's object-store
keys (read and delete: it prunes the label days past the retention). The evaluation image holds
mlops/feedback.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi

from modules.monitoring.jobs import SampleJobArgs, metric_cron_job, store_env

UID = 10001  # the evaluation image's non-root user
COMPONENT = "monitoring"


@dataclass(frozen=True, kw_only=True)
class FeedbackArgs(SampleJobArgs):
    metric: str  # accuracy | f1
    positive_class: str
    min_labels: int


def command(args: FeedbackArgs) -> list[pulumi.Input[str]]:
    return ["python", "-m", "mlops.feedback", "evaluate", "--model", args.model, "--alias", args.alias,
            "--metric", args.metric, "--positive-class", args.positive_class, "--log-uri", args.log_uri,
            "--window-hours", f"{args.window_hours:g}", "--min-labels", str(args.min_labels),
            "--retention-days", str(args.retention_days), "--pushgateway", args.pushgateway_url]


class Feedback(pulumi.ComponentResource):
    cron_job_name: pulumi.Output[str]

    def __init__(self, name: str, args: FeedbackArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlops:monitoring:Feedback", name, None, opts)
        env = [{"name": "HOME", "value": "/tmp"},
               *store_env(self, name, args.namespace, COMPONENT, args.s3_credentials, args.s3_endpoint)]
        container = {"name": "feedback", "image": args.image, "command": command(args), "env": env,
                     "resources": dict(args.resources)}
        # the day objects of the sample and the labels pass through /tmp one at a time
        cron = metric_cron_job(self, name, name, args.namespace, COMPONENT, args.schedule, args.time_zone, UID,
                               container, "256Mi", args.deadline_seconds)
        self.cron_job_name = cron.metadata.name
        self.register_outputs({"cron_job_name": self.cron_job_name})

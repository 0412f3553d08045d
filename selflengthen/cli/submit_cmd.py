"""`selflengthen submit`: upload the pipeline as a new version and start a run on Kubeflow Pipelines;
`selflengthen register`: upload a compiled pipeline as a version only (GitOps registration)."""

from __future__ import annotations

import json
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import typer
import yaml

from selflengthen.cli.common import ConfigOption, SetOption, fail, handle_errors, load_run_config
from selflengthen.config import ConfigError, RunConfig


def compiled_default_config(package: Path) -> str | None:
    """The ``config_json`` default compiled into ``package`` (None when it has none)."""
    spec = next(yaml.safe_load_all(package.read_text(encoding="utf-8")))  # then the platform spec (kfp-kubernetes)
    parameters = (spec.get("root") or {}).get("inputDefinitions", {}).get("parameters", {})
    return (parameters.get("config_json") or {}).get("defaultValue")


def check_package(config: RunConfig, package: Path) -> None:
    """Refuse a compiled file made from another config: its graph (iterations, execution,
    images, placement) was fixed when it was compiled, the parameter cannot change it."""
    if not package.is_file():
        raise ConfigError(f"--pipeline {package}: no such file")
    compiled = compiled_default_config(package)
    if compiled is None or json.loads(compiled) != json.loads(config.to_json()):
        raise ConfigError(
            f"--pipeline {package} was compiled from another config than --config: compile it again "
            "(selflengthen compile) or leave --pipeline out to compile now"
        )


@handle_errors
def submit_command(
    config: Path = ConfigOption,
    overrides: list[str] = SetOption,
    pipeline: Path = typer.Option(None, "--pipeline", help="a compiled pipeline of this config (default: compile it now)"),
    host: str = typer.Option(
        None, "--host", envvar="KF_PIPELINES_ENDPOINT",
        help="KFP API URL (e.g. https://kubeflow.example.com/pipeline); default: through the kubeconfig's API server",
    ),
    ui_host: str = typer.Option(None, "--ui-host", envvar="KF_PIPELINES_UI_ENDPOINT", help="KFP UI URL for the run link (default: --host)"),
    namespace: str = typer.Option(
        None, "--namespace", "-n",
        help="multi-user Kubeflow: the profile namespace of the pipeline, experiment and run (default: pipeline.namespace)",
    ),
    experiment: str = typer.Option("selflengthen", "--experiment", help="experiment of the run (created when missing)"),
    run_name: str = typer.Option(None, "--run-name", help="display name of the run (default: selflengthen <UTC time>)"),
    run_id: str = typer.Option("", "--run-id", help="the pipeline's run_id: resume that run (default: a new run, the KFP run id)"),
    service_account: str = typer.Option(
        None, "--service-account", help="Kubernetes account of the run's pods (default: pipeline.service_account)"
    ),
    version_name: str = typer.Option(None, "--version-name", help="name of the new pipeline version (default: <UTC time>-<sha256 of the file>)"),
    token_env: str = typer.Option(
        None, "--token-env", help="name of an env var holding a bearer token for the KFP API (its value is never written anywhere)"
    ),
    kube_context: str = typer.Option(None, "--kube-context", help="kubeconfig context to reach KFP through (without --host)"),
    kfp_namespace: str = typer.Option("kubeflow", "--kfp-namespace", help="namespace of Kubeflow Pipelines itself (for the kubeconfig route and in-cluster)"),
    wait: bool = typer.Option(False, "--wait", help="follow the run to its end; exit 1 unless it succeeded"),
    timeout_s: float = typer.Option(7 * 86400, "--timeout", help="seconds --wait follows the run"),
    poll_s: float = typer.Option(30.0, "--poll", help="seconds between two looks at the run with --wait"),
) -> None:
    """Upload the pipeline of a kubeflow config as a new pipeline version and start a run of it
    (its parameters: the config and the run id) under the run's service account; print the run's URL."""
    from pipelines import compile_pipeline
    from selflengthen.cluster import kfp_api

    cfg = load_run_config(config, overrides)
    if cfg.execution.target != "kubeflow":
        raise ConfigError("execution.target is local: submit runs kubeflow configs (selflengthen run runs this one here)")
    namespace = namespace or cfg.pipeline.namespace
    account = service_account or cfg.pipeline.service_account
    name = run_name or f"selflengthen {datetime.now(timezone.utc):%Y-%m-%d %H:%M:%S}"
    with tempfile.TemporaryDirectory() as folder:
        if pipeline is None:
            package = compile_pipeline(cfg, Path(folder) / "selflengthen.yaml")
        else:
            check_package(cfg, pipeline)
            package = pipeline
        client = kfp_api.connect(host, kfp_namespace=kfp_namespace, token_env=token_env, kube_context=kube_context, ui_host=ui_host)
        submission = kfp_api.submit(
            client, package,
            parameters={"config_json": cfg.to_json(), "run_id": run_id},
            namespace=namespace, service_account=account, experiment=experiment, run_name=name, version_name=version_name,
        )  # fmt: skip
    typer.echo(f"pipeline {submission.pipeline_id} version {submission.version_name} ({submission.version_id})")
    typer.echo(f"run {submission.run_id} ({name}) in experiment {experiment}, service account {account}")
    typer.echo(f"run URL: {submission.url}")
    if not wait:
        return
    run = kfp_api.follow(
        client, submission.run_id, timeout_s=timeout_s, poll_s=poll_s, on_state=lambda state: typer.echo(f"run state: {state}")
    )
    if run.state.upper() != "SUCCEEDED":
        error = kfp_api.run_error(run)
        fail(f"run {submission.run_id} ended {run.state}{': ' + error if error else ''} -- {submission.url}", code=1)
    typer.echo(f"run {submission.run_id} succeeded")


@handle_errors
def register_command(
    pipeline: Path = typer.Option(..., "--pipeline", help="the compiled pipeline (KFP v2 YAML) to upload"),
    host: str = typer.Option(None, "--host", envvar="KF_PIPELINES_ENDPOINT", help="KFP API URL (in a pod: http://ml-pipeline.kubeflow:8888)"),
    namespace: str = typer.Option(
        "selflengthen", "--namespace", "-n", envvar="SELFLENGTHEN_NAMESPACE", help="multi-user Kubeflow: the profile namespace of the pipeline"
    ),
    version_name: str = typer.Option(None, "--version-name", help="name of the version (default: sha256-<hash of the file>)"),
    token_env: str = typer.Option(None, "--token-env", help="name of an env var holding a bearer token for the KFP API"),
    kube_context: str = typer.Option(None, "--kube-context", help="kubeconfig context to reach KFP through (without --host)"),
    kfp_namespace: str = typer.Option("kubeflow", "--kfp-namespace", help="namespace of Kubeflow Pipelines itself (for the kubeconfig route and in-cluster)"),
) -> None:
    """Upload a compiled pipeline as a version of its pipeline, once per content (the chart's
    GitOps registration Job runs this on every sync)."""
    from selflengthen.cluster import kfp_api

    if not pipeline.is_file():
        raise ConfigError(f"--pipeline {pipeline}: no such file")
    client = kfp_api.connect(host, kfp_namespace=kfp_namespace, token_env=token_env, kube_context=kube_context)
    pipeline_id, version_id, name = kfp_api.register(client, pipeline, namespace=namespace, version_name=version_name)
    typer.echo(f"pipeline {kfp_api.pipeline_name_of(pipeline)} ({pipeline_id}) version {name} ({version_id})")


def register(app: typer.Typer) -> None:
    app.command("submit")(submit_command)
    app.command("register")(register_command)

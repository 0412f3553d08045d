"""`selflengthen doctor`: check what a kubeflow run needs before submitting it."""

from __future__ import annotations

from pathlib import Path

import typer

from selflengthen.cli.common import ConfigOption, SetOption, handle_errors, load_run_config


@handle_errors
def doctor_command(
    config: Path = ConfigOption,
    overrides: list[str] = SetOption,
    host: str = typer.Option(None, "--host", envvar="KF_PIPELINES_ENDPOINT", help="KFP API URL (default: through the kubeconfig's API server)"),
    token_env: str = typer.Option(None, "--token-env", help="name of an env var holding a bearer token for the KFP API"),
    kube_context: str = typer.Option(None, "--kube-context", help="kubeconfig context of the cluster (default: in-cluster, else the current one)"),
    kfp_namespace: str = typer.Option("kubeflow", "--kfp-namespace", help="namespace of Kubeflow Pipelines itself (for the kubeconfig route and in-cluster)"),
    run_namespace: str = typer.Option(
        None, "--run-namespace",
        help="where the runs' pods and their account live: standalone KFP's namespace (e.g. kubeflow); default pipeline.run_namespace, else pipeline.namespace",
    ),
    artifact_secret: str = typer.Option(
        "mlpipeline-minio-artifact", "--artifact-secret",
        help="the Secret of KFP's artifact store the launcher reads in the run's namespace (KFP's default name)",
    ),
) -> None:
    """Check storage, base model, benchmarks, the KFP API, Kubeflow Trainer, GPU nodes, the run's
    service account and its permissions, and the Secrets: one line per check, exit 1 when one fails."""
    from selflengthen.cluster import kfp_api
    from selflengthen.cluster.doctor import run_checks
    from selflengthen.cluster.objects import kube_api_client
    from selflengthen.errors import SelfLengthenError

    cfg = load_run_config(config, overrides)
    findings = run_checks(
        cfg,
        kfp_client=lambda: kfp_api.connect(host, kfp_namespace=kfp_namespace, token_env=token_env, kube_context=kube_context),
        api_client=lambda: kube_api_client(SelfLengthenError, kube_context),
        artifact_secret=artifact_secret,
        run_namespace=run_namespace,
    )
    for finding in findings:
        typer.echo(finding.line())
    failures = [finding for finding in findings if not finding.ok]
    warnings = sum(finding.warning for finding in findings)
    typer.echo(f"{len(findings) - len(failures)} ok{f' ({warnings} with a warning)' if warnings else ''}, {len(failures)} failed")
    if failures:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("doctor")(doctor_command)

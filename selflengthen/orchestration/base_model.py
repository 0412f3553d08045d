"""The run's base model named by hub id (``model.base: hf://<owner>/<repo>[@revision]``).

The prepare step resolves it once: the revision (a branch or tag by default ``main``) is pinned to
the commit the hub cache holds (``huggingface_hub.snapshot_download``), written to the run's
``base-model.json``, and the folder every server and trainer loads is returned: the snapshot in
the hub cache when the run's artefacts are local, else a copy below the run on S3 (made once, the
record written after it), so pods need no access to the Hub.
"""

from __future__ import annotations

import json

from selflengthen.config import RunConfig
from selflengthen.modelio import hub_snapshot, parse_hub_uri
from selflengthen.orchestration.layout import RunLayout
from selflengthen.storage import get_storage, is_s3_uri, join_uri


def resolve_base_model(config: RunConfig) -> str:
    """The URI of the run's copy of the hub model ``config.model.base`` (its revision pinned)."""
    storage = get_storage(config.storage)
    layout = RunLayout(config)
    repo, revision = parse_hub_uri(config.model.base)
    record_uri = layout.base_model_record()
    if storage.exists(record_uri):
        record = json.loads(storage.read_text(record_uri))
        if record["id"] == repo and record["revision"] == revision and storage.exists(join_uri(record["uri"], "config.json")):
            return record["uri"]
    folder, commit = hub_snapshot(config.model.base)
    uri = str(folder)
    if is_s3_uri(config.workdir):
        uri = layout.base_model_copy()
        storage.delete_prefix(uri)
        storage.upload_dir(folder, uri)
    record = {"id": repo, "revision": revision, "commit": commit, "uri": uri}
    storage.write_text(record_uri, json.dumps(record, indent=2))
    return uri

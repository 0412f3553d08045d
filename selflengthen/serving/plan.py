"""What one model server loads and the names it answers to (``serving.layout``), and the vLLM
arguments that say so.

A server loads one model folder (the base model, or a merged / fully fine-tuned one), answers to
one or more names for it, and may serve LoRA adapters of it, each under its own name. ``roles``
maps each role the server answers for (``generator``, ``extender``, ``base``: the base model that
proposes and judges self-instruct queries) to the model name its requests carry.

vLLM 0.32.0 (the release the vLLM test tier runs; ``.cache/vllm-venv``):

* ``--served-model-name`` takes several names: "If multiple names are provided, the server will
  respond to any of the provided names" (``vllm/config/model.py``, ``served_model_name``);
* ``--lora-modules`` takes several ``name=path`` entries (``vllm/entrypoints/launchers/cli_args.py``,
  ``lora_modules: list[LoRAModulePath]``);
* ``--max-lora-rank`` is one of 1, 8, 16, 32, 64, 128, 256, 320, 512 and ``--max-loras``, the
  adapters in one batch, defaults to 1 (``vllm/config/lora.py``, ``MaxLoRARanks``, ``max_loras``):
  a shared server batches both roles' requests together only with ``--max-loras`` 2.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Literal

from selflengthen.config import RunConfig
from selflengthen.errors import EndpointError

ModelRole = Literal["generator", "extender", "base"]
# The model servers a phase can have: one per role, or one shared by all.
ServerName = Literal["generator", "extender", "base", "shared"]
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


def served_name(config: RunConfig, role: ModelRole) -> str:
    """The model name requests for ``role`` carry (the endpoint's ``model``; the base's own name)."""
    return config.serving.base_model_name if role == "base" else getattr(config.serving, role).model


@dataclass(frozen=True)
class ServerPlan:
    """One model server: the model it loads, its names, its LoRA adapters, the roles it answers for."""

    model: str
    names: tuple[str, ...]
    adapters: tuple[tuple[str, str], ...] = ()
    roles: dict[str, str] = field(default_factory=dict)

    @classmethod
    def for_role(cls, config: RunConfig, role: ModelRole, model: str, adapter: str | None = None, *, is_base: bool = False) -> "ServerPlan":
        """A server of one role: ``model`` under the role's name, or with ``adapter`` the adapter under
        that name and the model as ``<name>-base``. ``is_base``: ``model`` is the run's base model, so
        the server also answers for the base (under the role's name)."""
        name = served_name(config, role)
        if adapter is not None:
            return cls(model=model, names=(f"{name}-base",), adapters=((name, adapter),), roles={role: name})
        return cls(model=model, names=(name,), roles={role: name, **({"base": name} if is_base and role != "base" else {})})

    @classmethod
    def shared(cls, config: RunConfig, base: str, *, on_base: list[ModelRole], adapters: dict[ModelRole, str]) -> "ServerPlan":
        """One server for every role: the base model under its own name and the names of the roles
        that are the base (``on_base``), each other role as its LoRA adapter (``adapters``)."""
        names = [config.serving.base_model_name, *(served_name(config, role) for role in on_base if role != "base")]
        roles = {"base": config.serving.base_model_name, **{role: served_name(config, role) for role in [*on_base, *adapters]}}
        return cls(
            model=base,
            names=tuple(dict.fromkeys(names)),
            adapters=tuple((served_name(config, role), uri) for role, uri in adapters.items()),
            roles=roles,
        )

    def vllm_args(self, config: RunConfig, path: Callable[[str], str] = str) -> list[str]:
        """The vLLM arguments naming the model and its adapters (``path``: where the server finds an adapter URI)."""
        args = ["--served-model-name", *self.names]
        if self.adapters:
            args += [
                "--enable-lora",
                "--lora-modules", *(f"{name}={path(uri)}" for name, uri in self.adapters),
                "--max-lora-rank", str(vllm_lora_rank(config.training.lora.r)),
                "--max-loras", str(len(self.adapters)),
            ]  # fmt: skip
        return args


def vllm_lora_rank(rank: int) -> int:
    """The smallest ``--max-lora-rank`` vLLM accepts that holds ``rank``."""
    for allowed in VLLM_LORA_RANKS:
        if rank <= allowed:
            return allowed
    raise EndpointError(f"training.lora.r = {rank} exceeds the largest LoRA rank vLLM serves ({VLLM_LORA_RANKS[-1]})")

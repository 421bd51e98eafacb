"""One small strategy per training stage. The trainer owns the loop; a strategy only says what a
batch's loss is.

Every strategy returns *sums* over its loss units (target tokens for PT/SFT, pairs for DPO/RM)
together with ``units(batch)``; the trainer divides by the units of the whole optimizer step
(all micro-batches, all ranks). That makes k accumulated micro-batches, or w data-parallel ranks,
give exactly the gradient of one big batch even when micro-batches hold different token counts.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from astrai_core.checkpoint import save_model
from astrai_core.config import ModelConfig
from astrai_core.errors import CheckpointError
from astrai_core.model import Transformer
from astrai_core.tokenizer import Tokenizer

REWARD_HEAD_FILE = "reward_head.safetensors"

Metrics = dict[str, torch.Tensor]


def token_logps(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log p(label) per position, (B, T), computed in float32."""
    return torch.gather(F.log_softmax(logits.float(), dim=-1), -1, labels.unsqueeze(-1)).squeeze(-1)


def completion_logps(model: nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sum of log-probs of the tokens where ``mask`` is 1 (completion tokens only), shape (B,)."""
    logits = model(ids[:, :-1])  # (B, T-1, V): position t predicts token t+1
    return (token_logps(logits, ids[:, 1:]) * mask[:, 1:]).sum(-1)


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, beta: float, label_smoothing: float = 0.0
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-pair sigmoid DPO loss (with conservative label smoothing) and the implicit rewards."""
    chosen_reward = beta * (policy_chosen - ref_chosen)
    rejected_reward = beta * (policy_rejected - ref_rejected)
    logits = chosen_reward - rejected_reward
    loss = -F.logsigmoid(logits) * (1 - label_smoothing) - F.logsigmoid(-logits) * label_smoothing
    return loss, chosen_reward.detach(), rejected_reward.detach()


def bradley_terry_loss(chosen_score: torch.Tensor, rejected_score: torch.Tensor) -> torch.Tensor:
    """Per-pair reward-model loss ``-log sigmoid(r_chosen - r_rejected)``."""
    return -F.logsigmoid(chosen_score - rejected_score)


def lm_from_state(config: ModelConfig, state: dict[str, torch.Tensor]) -> Transformer:
    """A CPU :class:`Transformer` holding ``state`` (works for weights gathered from DDP/FSDP)."""
    with torch.device("meta"):
        lm = Transformer(config)
    state = {k: v.detach().cpu() for k, v in state.items()}
    if config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    lm.load_state_dict(state, strict=not config.tie_word_embeddings, assign=True)
    if config.tie_word_embeddings:
        lm.lm_head.weight = lm.embed_tokens.weight
    return lm


class Strategy:
    """Base: a stage's loss. Subclasses set ``name`` and ``data_kind`` and implement ``loss_sum``."""

    name = "base"
    data_kind = "pt"

    def units(self, batch: dict[str, torch.Tensor]) -> int:
        raise NotImplementedError

    def loss_sum(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, Metrics]:
        """(sum of per-unit losses, dict of per-unit metric sums) for one micro-batch."""
        raise NotImplementedError

    def tokens(self, batch: dict[str, torch.Tensor]) -> int:
        """Tokens the model reads for this batch (for tokens/s)."""
        return sum(int(v.numel()) for k, v in batch.items() if k.endswith("_ids") or k == "input_ids")

    def to(self, device: torch.device) -> "Strategy":
        return self

    def export(self, state: dict[str, torch.Tensor], config: ModelConfig, tokenizer: Tokenizer,
               path: str | os.PathLike[str]) -> Path:
        """Write the trained weights (a full state dict) as a model folder ``astrai_core.load_model`` opens."""
        return save_model(lm_from_state(config, state), tokenizer, path)


class PTStrategy(Strategy):
    """Causal LM loss on every next token."""

    name = "pt"
    data_kind = "pt"

    def units(self, batch):
        ids = batch["input_ids"]
        return ids.shape[0] * (ids.shape[1] - 1)

    def loss_sum(self, model, batch):
        ids = batch["input_ids"]
        logits = model(ids[:, :-1])  # (B, T, V)
        loss = F.cross_entropy(logits.float().flatten(0, 1), ids[:, 1:].flatten(), reduction="sum")
        return loss, {}


class SFTStrategy(Strategy):
    """Causal LM loss restricted to the assistant tokens (``loss_mask``)."""

    name = "sft"
    data_kind = "sft"

    def units(self, batch):
        return int(batch["loss_mask"][:, 1:].sum())

    def loss_sum(self, model, batch):
        ids, mask = batch["input_ids"], batch["loss_mask"][:, 1:]
        logits = model(ids[:, :-1])
        ce = F.cross_entropy(logits.float().flatten(0, 1), ids[:, 1:].flatten(), reduction="none")
        # multiply, don't index: an all-zero mask then gives 0 (with a zero gradient), never NaN
        return (ce * mask.flatten()).sum(), {}


class DPOStrategy(Strategy):
    """Direct preference optimisation against a frozen reference model (sigmoid loss).

    ``nll_weight`` > 0 adds ``nll_weight`` times the chosen completion's mean per-token negative
    log-likelihood to each pair's loss (as in RPO): the policy must keep the chosen answer likely, so
    the preference margin cannot be bought by making both answers improbable.
    """

    name = "dpo"
    data_kind = "dpo"

    def __init__(self, ref_model: nn.Module, beta: float = 0.1, label_smoothing: float = 0.0,
                 nll_weight: float = 0.0) -> None:
        self.ref_model = ref_model.eval()
        for p in self.ref_model.parameters():
            p.requires_grad_(False)
        self.beta = beta
        self.label_smoothing = label_smoothing
        self.nll_weight = nll_weight

    def to(self, device):
        self.ref_model.to(device)
        return self

    def units(self, batch):
        return batch["chosen_ids"].shape[0]

    def loss_sum(self, model, batch):
        B = batch["chosen_ids"].shape[0]
        ids = torch.cat([batch["chosen_ids"], batch["rejected_ids"]])  # (2B, T): one forward for both
        mask = torch.cat([batch["chosen_mask"], batch["rejected_mask"]])
        policy = completion_logps(model, ids, mask)
        with torch.no_grad():
            ref = completion_logps(self.ref_model, ids, mask)
        loss, rc, rr = dpo_loss(policy[:B], policy[B:], ref[:B], ref[B:], self.beta, self.label_smoothing)
        chosen_tokens = batch["chosen_mask"][:, 1:].sum(-1).clamp(min=1)
        nll = -policy[:B] / chosen_tokens  # mean per-token NLL of each chosen answer
        if self.nll_weight:
            loss = loss + self.nll_weight * nll
        metrics = {
            "nll/chosen": nll.detach().sum(),
            "rewards/chosen": rc.sum(), "rewards/rejected": rr.sum(), "rewards/margins": (rc - rr).sum(),
            "rewards/accuracies": (rc > rr).float().sum(),
            "logps/chosen": policy[:B].detach().sum(), "logps/rejected": policy[B:].detach().sum(),
        }
        return loss.sum(), metrics


class RewardModel(nn.Module):
    """A transformer with a scalar head read at the last completion token.

    Saved as a normal LM model folder (so ``astrai_core.load_model`` opens it) plus
    ``reward_head.safetensors`` holding ``weight`` (1, hidden) and ``bias`` (1,) in float32.
    """

    def __init__(self, lm: Transformer) -> None:
        super().__init__()
        self.lm = lm
        self.head = nn.Linear(lm.config.hidden_size, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Scores (B,) for right-padded ``ids``; ``mask`` marks completion tokens."""
        hidden = self.lm(ids, return_hidden=True)  # (B, T, C)
        pos = torch.arange(ids.shape[1], device=ids.device)
        last = (mask * pos).argmax(-1)  # index of the last completion token
        h = hidden[torch.arange(ids.shape[0], device=ids.device), last]  # (B, C)
        return self.head(h).squeeze(-1).float()

    def save_head(self, folder: str | os.PathLike[str]) -> None:
        save_file({"weight": self.head.weight.detach().float().cpu().contiguous(),
                   "bias": self.head.bias.detach().float().cpu().contiguous()},
                  str(Path(folder) / REWARD_HEAD_FILE))

    @classmethod
    def from_lm(cls, lm: Transformer, folder: str | os.PathLike[str] | None = None) -> "RewardModel":
        """Wrap ``lm``; load the head from ``folder/reward_head.safetensors`` when it exists."""
        rm = cls(lm)
        head = Path(folder) / REWARD_HEAD_FILE if folder is not None else None
        if head is not None and head.is_file():
            state = load_file(str(head))
            if state.get("weight") is None or tuple(state["weight"].shape) != (1, lm.config.hidden_size):
                raise CheckpointError(f"{head}: expected weight of shape (1, {lm.config.hidden_size})")
            rm.head.load_state_dict(state)
        return rm


class RMStrategy(Strategy):
    """Bradley-Terry reward-model training on (chosen, rejected) pairs."""

    name = "rm"
    data_kind = "rm"

    def units(self, batch):
        return batch["chosen_ids"].shape[0]

    def loss_sum(self, model, batch):
        B = batch["chosen_ids"].shape[0]
        scores = model(torch.cat([batch["chosen_ids"], batch["rejected_ids"]]),
                       torch.cat([batch["chosen_mask"], batch["rejected_mask"]]))
        sc, sr = scores[:B], scores[B:]
        loss = bradley_terry_loss(sc, sr)
        metrics = {"rewards/chosen": sc.detach().sum(), "rewards/rejected": sr.detach().sum(),
                   "rewards/margins": (sc - sr).detach().sum(), "accuracy": (sc > sr).float().sum()}
        return loss.sum(), metrics

    def export(self, state, config, tokenizer, path):
        lm = lm_from_state(config, {k[3:]: v for k, v in state.items() if k.startswith("lm.")})
        rm = RewardModel(lm)
        rm.head.load_state_dict({k[5:]: v for k, v in state.items() if k.startswith("head.")})
        # save_model swaps the folder in atomically; the head is added to the finished folder
        out = save_model(lm, tokenizer, path)
        rm.save_head(out)
        return out

"""Optional PyTorch Lightning integration (``pip install posefeed[lightning]``).

This module imports ``lightning`` at import time, so import it only when you use it;
nothing else in posefeed imports it. ::

    from posefeed.trainers.lightning import PoseDataModule
    dm = PoseDataModule(train_table, val_table, codecs=[SimCC((192, 256))], batch_size=64)
    lightning.Trainer(max_epochs=420).fit(my_lightning_module, datamodule=dm)
"""
from __future__ import annotations

from typing import Any, Callable, Iterator

from posefeed.pipelines.augment import AugmentConfig
from posefeed.pipelines.loader import PoseLoader

try:
    import lightning as L  # noqa: N812
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError("posefeed.trainers.lightning needs Lightning: "
                      "pip install 'posefeed[lightning]'") from e


class _EpochSynced:
    """Wraps a loader so each iteration starts at the Lightning trainer's current epoch
    (Lightning calls ``set_epoch`` only on samplers, and PoseLoader has none; ``epoch=None``:
    the loader's own epoch, for validation).

    ``iter()`` returns a generator that touches the loader only at its first ``next()``:
    Lightning calls ``iter(dataloader)`` once just to check that it is iterable
    (``_check_dataloader_iterable``) and drops the result, which on the loader itself starts
    an epoch and its prefetch for nothing."""

    def __init__(self, loader: Any, epoch: Callable[[], int] | None) -> None:
        self.loader = loader
        self._epoch = epoch

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        if self._epoch is not None and hasattr(self.loader, "set_epoch"):
            self.loader.set_epoch(self._epoch())
        yield from self.loader


class PoseDataModule(L.LightningDataModule):
    """PoseLoaders as a LightningDataModule.

    Args:
        train_table, val_table: PoseTables (``val_table`` may be None).
        codecs: target codecs for both loaders.
        loader_factory: builds a loader ``(table, codecs, train: bool, **loader_kwargs)``;
            default: `posefeed.pipelines.loader.PoseLoader` (augmented + shuffled for
            training, ``AugmentConfig.none()`` / in order for validation).
        loader_kwargs: passed to every loader (``mode``, ``input_size``, ``batch_size``,
            ``device``, ``seed``, ...).
    The training loader's position is saved in Lightning checkpoints (``state_dict``).
    """

    def __init__(self, train_table: Any, val_table: Any = None, codecs: Any = (),
                 loader_factory: Callable[..., Any] | None = None, **loader_kwargs: Any) -> None:
        super().__init__()
        self.train_table = train_table
        self.val_table = val_table
        self.codecs = codecs
        self.loader_factory = loader_factory or _pose_loader
        self.loader_kwargs = loader_kwargs
        self.train_loader: Any = None
        self.val_loader: Any = None
        self._pending_state: dict[str, Any] | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.train_loader is None:
            self.train_loader = self.loader_factory(self.train_table, self.codecs, True,
                                                    **self.loader_kwargs)
            if self._pending_state is not None and hasattr(self.train_loader, "load_state_dict"):
                self.train_loader.load_state_dict(self._pending_state)
        if self.val_loader is None and self.val_table is not None:
            self.val_loader = self.loader_factory(self.val_table, self.codecs, False,
                                                  **self.loader_kwargs)

    def _current_epoch(self) -> int:
        trainer = getattr(self, "trainer", None)
        return int(trainer.current_epoch) if trainer is not None else 0

    def train_dataloader(self) -> Any:
        return _EpochSynced(self.train_loader, self._current_epoch)

    def val_dataloader(self) -> Any:
        return _EpochSynced(self.val_loader, None) if self.val_loader is not None else []

    def state_dict(self) -> dict[str, Any]:
        if self.train_loader is not None and hasattr(self.train_loader, "state_dict"):
            return {"train_loader": self.train_loader.state_dict()}
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state = state_dict.get("train_loader")
        if state is None:
            return
        if self.train_loader is not None and hasattr(self.train_loader, "load_state_dict"):
            self.train_loader.load_state_dict(state)
        else:
            self._pending_state = state


def _pose_loader(table: Any, codecs: Any, train: bool, **kwargs: Any) -> Any:
    if not train:
        kwargs = dict(kwargs, shuffle=False, drop_last=False, schedule=AugmentConfig.none())
    return PoseLoader(table, codecs, **kwargs)

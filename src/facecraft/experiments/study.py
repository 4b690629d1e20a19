"""A study: one run directory holding the prepared data, the trained models and their records.

Each stage (prepare data, train target, prior, amortizer, ...) is computed at
most once per configuration: its outputs are stored under the run directory
with the hash of everything it depends on in the file name, so a rerun with
the same config reuses them and a changed config trains anew beside them.
Stage wall times and the machine are recorded in ``stages.json``.

Layout::

    RUN_DIR/config.json            resolved RunConfig
    RUN_DIR/data-<hash>/           prepared split (uint8 safetensors + manifest.json)
    RUN_DIR/models/<name>-<hash>.{safetensors,json}
    RUN_DIR/samples/prior-<hash>.png
    RUN_DIR/stages.json            wall time of every stage, machine info
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

import torch

from facecraft._io import atomic_write_json, config_hash, read_json
from facecraft._locks import file_lock
from facecraft._torchutils import machine_info, resolve_device, seeded
from facecraft._validation import check_run_dir
from facecraft.data.types import PreparedData
from facecraft.experiments.config import RunConfig, config_to_dict
from facecraft.experiments.evaluate import spread_over_identities
from facecraft.experiments.images import save_grid
from facecraft.experiments.private_pool import pool_spec, prepare_pool
from facecraft.models import Amortizer, Critic, Generator, SplitNetwork, build_target, feature_shape
from facecraft.models.train import predict_logits, train_amortizer, train_target, train_wgan_gp

__all__ = [
    "Study",
    "UNLABELLED_DATASETS",
]

#: datasets without attribute labels: the target network (an attribute classifier) cannot be trained
#: on them
UNLABELLED_DATASETS = ("lfw", "folder")

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, int, str], None]


class Study:
    """Lazily prepared data and trained models of one run directory.

    Args:
        cfg: the run's configuration.
        run_dir: where everything is stored.
        data_root: dataset folder or a parent of it (else ``FACECRAFT_DATA``).
        progress: ``progress(done, total, desc)`` for long loops.
        run_started: when the invocation this study belongs to began (``time.time()``); worker
            processes get their parent's, so a model one process trained is not recorded as "cached"
            when another loads it (Default: None: now).
    """

    def __init__(
        self,
        cfg: RunConfig,
        run_dir: Path,
        *,
        data_root: Optional[str] = None,
        progress: Optional[ProgressFn] = None,
        run_started: Optional[float] = None,
    ) -> None:
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.device = resolve_device(
            cfg.device
        )  # a device this machine lacks is refused before any write
        if cfg.data.dataset in UNLABELLED_DATASETS:
            raise ValueError(
                f"--dataset {cfg.data.dataset}: the study's target network is an attribute "
                f"classifier and {cfg.data.dataset} images carry no attribute labels, so `train "
                "target` could not run on them; `facecraft demo --dataset "
                f"{cfg.data.dataset}` takes only the private people from it "
                "(facecraft.experiments.private_pool)"
            )
        check_run_dir(self.run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.data_root = data_root
        self.progress = progress
        #: prepare the data split again even when a matching one is cached (``data prepare
        #: --force``)
        self.force_data = False
        self._cache: Dict[str, Any] = {}
        self.run_started = time.time() if run_started is None else float(run_started)
        config_path = self.run_dir / "config.json"
        try:
            same = config_path.is_file() and read_json(config_path) == config_to_dict(
                cfg
            )  # both JSON-typed
        except (OSError, ValueError):
            same = False
        # rewritten only when it changes, so a refused command leaves the run directory as it was
        if not same:
            atomic_write_json(config_path, config_to_dict(cfg))

    # -- bookkeeping ---------------------------------------------------------------------------
    def record_stage(
        self, name: str, seconds: float, cached: bool, extra: Optional[Dict[str, Any]] = None
    ) -> None:
        path = self.run_dir / "stages.json"
        with file_lock(path):  # sweep workers record their stages concurrently
            record = read_json(path) if path.exists() else {"stages": {}}
            record["machine"] = machine_info(self.device)
            prev = record["stages"].get(name, {})
            if (
                cached
                and not prev.get("cached", True)
                and prev.get("finished_at", 0.0) >= self.run_started
            ):
                return  # trained in this invocation (by another process): keep that record
            entry = {
                "seconds": prev.get("seconds", seconds) if cached else seconds,
                "cached": cached,
                "finished_at": time.time(),
                **(extra or {}),
            }
            record["stages"][name] = entry
            atomic_write_json(path, record)

    def _timed(self, name: str, fn: Callable[[], Tuple[Any, bool, Dict[str, Any]]]) -> Any:
        if name in self._cache:
            return self._cache[name]
        t0 = time.time()
        value, cached, extra = fn()
        self.record_stage(name, time.time() - t0, cached, extra)
        self._cache[name] = value
        return value

    def key(self, *parts: Any) -> str:
        """Hash of the data manifest plus ``parts`` (configs), naming a stage's files."""
        return config_hash(
            [self.data.manifest.get("content_hash", self.data.manifest), self.cfg.seed, *parts]
        )

    def model_stem(self, name: str, *parts: Any) -> Path:
        return self.run_dir / "models" / f"{name}-{self.key(*parts)}"

    # -- stages ----------------------------------------------------------------------------------
    @property
    def data(self) -> PreparedData:
        """The prepared identity-disjoint split (``facecraft data prepare``)."""

        def run():
            from facecraft.data import prepare_data, resolve_dataset_root

            dcfg = self.cfg.data
            if dcfg.dataset != "synthetic":
                root = resolve_dataset_root(dcfg.dataset, dcfg.root or self.data_root)
                import dataclasses

                dcfg = dataclasses.replace(dcfg, root=str(root))
            cache_dir = self.run_dir / f"data-{config_hash(config_to_dict(dcfg))}"
            cached = (cache_dir / "manifest.json").exists()
            data = prepare_data(dcfg, cache_dir, progress=self.progress, force=self.force_data)
            cached = cached and not self.force_data
            counts = data.manifest.get("counts", {})
            return data, cached, {"counts": counts}

        return self._timed("data", run)

    def target(self) -> SplitNetwork:
        """The split target network trained on public attributes (``facecraft train target``)."""

        def run():
            data, m, t = self.data, self.cfg.model, self.cfg.target
            if not data.has_attributes:
                raise ValueError(
                    "the target network is an attribute classifier and this dataset has no "
                    "attributes"
                )
            with seeded(self.cfg.seed + 1):
                net = build_target(
                    m.target_arch, num_outputs=len(data.attribute_names), width=m.target_width
                )
            stem = self.model_stem("target", m.target_arch, m.target_width, config_to_dict(t))
            cached = (stem.parent / (stem.name + ".json")).exists()

            def evaluate(model):
                from facecraft.metrics.utility import mean_auc

                logits = predict_logits(model, data.eval_test.images, device=self.device)
                return {"mean_auc_eval_test": float(mean_auc(logits, data.eval_test.attributes))}

            rec = train_target(
                net,
                data.public.images,
                data.public.attributes,
                epochs=t.epochs,
                batch_size=t.batch_size,
                lr=t.lr,
                weight_decay=t.weight_decay,
                augment_flip=t.augment_flip,
                device=self.device,
                seed=self.cfg.seed,
                checkpoint_stem=stem,
                progress=self.progress,
                evaluate=evaluate,
                meta={"config": config_to_dict(self.cfg), "data_manifest_hash": self.key()},
            )
            net.eval()
            return net, cached, {"metrics": rec.get("metrics", {})}

        return self._timed("target", run)

    def feature_shape(self) -> Tuple[int, ...]:
        return feature_shape(self.target().encoder, self.data.image_size)

    def prior(self) -> Tuple[Generator, Critic]:
        """The attacker's WGAN-GP face prior on public images (``facecraft train prior``)."""

        def run():
            data, m, p = self.data, self.cfg.model, self.cfg.prior
            with seeded(self.cfg.seed + 2):
                g = Generator(m.latent_dim, data.image_size, width=m.generator_width)
                d = Critic(data.image_size, width=m.critic_width)
            stem = self.model_stem(
                "prior", m.latent_dim, m.generator_width, m.critic_width, config_to_dict(p)
            )
            cached = (stem.parent / (stem.name + ".json")).exists()
            grid = self.run_dir / "samples" / f"{stem.name}.png"

            def on_sample(samples: torch.Tensor, step: int) -> None:
                save_grid(samples, grid, nrow=8)

            rec = train_wgan_gp(
                g,
                d,
                data.public.images,
                steps=p.steps,
                batch_size=p.batch_size,
                n_critic=p.n_critic,
                gp_weight=p.gp_weight,
                lr=p.lr,
                betas=p.betas,
                sample_every=p.sample_every,
                device=self.device,
                seed=self.cfg.seed,
                checkpoint_stem=stem,
                progress=self.progress,
                on_sample=on_sample,
                meta={"config": config_to_dict(self.cfg), "data_manifest_hash": self.key()},
            )
            g.eval()
            d.eval()
            return (g, d), cached, {"metrics": rec.get("metrics", {}), "samples": str(grid)}

        return self._timed("prior", run)

    def amortizer(self) -> Amortizer:
        """``Amor(Enc(G(z))) -> z`` for warm-started inversion (``facecraft train amortizer``)."""

        def run():
            m, a = self.cfg.model, self.cfg.amortizer
            net = self.target()
            g, _ = self.prior()
            shape = self.feature_shape()
            with seeded(self.cfg.seed + 3):
                amor = Amortizer(shape, m.latent_dim, width=m.amortizer_width)
            stem = self.model_stem(
                "amortizer",
                config_to_dict(m),
                config_to_dict(self.cfg.target),
                config_to_dict(self.cfg.prior),
                config_to_dict(a),
            )
            cached = (stem.parent / (stem.name + ".json")).exists()
            rec = train_amortizer(
                amor,
                net.encoder,
                g,
                steps=a.steps,
                batch_size=a.batch_size,
                lr=a.lr,
                device=self.device,
                seed=self.cfg.seed,
                checkpoint_stem=stem,
                progress=self.progress,
                meta={"config": config_to_dict(self.cfg), "data_manifest_hash": self.key()},
            )
            amor.eval()
            return amor, cached, {"metrics": rec.get("metrics", {})}

        return self._timed("amortizer", run)

    # -- evaluation side -------------------------------------------------------------------------
    @property
    def private(self) -> PreparedData:
        """Whose ``eval_train`` (gallery) and ``eval_test`` (attacked faces) the study uses: its own
        data, or the private pool of another set (:mod:`facecraft.experiments.private_pool`)."""
        if pool_spec(self.cfg) is None:
            return self.data

        def run():
            pool = prepare_pool(self.cfg, self.run_dir, self.data_root, self.progress)
            return pool, False, {"counts": pool.manifest.get("counts", {})}

        return self._timed("private_pool", run)

    def private_key(self, *parts: Any) -> str:
        """:meth:`key` of what reads the private faces (also keyed by a separate pool's data)."""
        if pool_spec(self.cfg) is None:
            return self.key(*parts)
        return self.key("private-pool", self.private.manifest.get("content_hash"), *parts)

    def eval_indices(self) -> torch.Tensor:
        """Which ``eval_test`` images are protected and attacked (``eval['n_images']``, spread over
        identities)."""

        def run():
            idx = spread_over_identities(
                self.private.eval_test.identities, self.cfg.eval.get("n_images"), self.cfg.seed + 17
            )
            return idx, False, {"n_images": int(idx.numel())}

        return self._timed("eval_indices", run)

    @property
    def dlib_crop(self) -> float:
        """The share of the image dlib's chip is cut from (``eval.dlib_crop``, default 0.75: CelebA
        chips)."""
        return float(self.cfg.eval.get("dlib_crop", 0.75))

    def dlib_oracle(self):
        """The third-party oracle with ``eval_train`` as its gallery (cached embeddings)."""

        def run():
            from facecraft.metrics.dlib_oracle import DlibOracle

            stem = (
                self.run_dir
                / "models"
                / f"dlib-gallery-{self.private_key('dlib', self.cfg.eval.get('dlib_crop'))}"
            )
            crop = self.dlib_crop
            if (stem.parent / (stem.name + ".json")).exists():
                return DlibOracle.load(stem), True, {}
            oracle = DlibOracle(crop_fraction=crop)
            tr = self.private.eval_train
            oracle.fit(
                tr.float_images(),
                tr.identities,
                num_identities=tr.num_identities,
                progress=self.progress,
                checkpoint_stem=stem.parent / (stem.name + "-partial"),
            )
            oracle.save(stem)
            return oracle, False, {}

        return self._timed("dlib_oracle", run)

    def evalnet(self):
        """The trained identity oracle (the paper's Eval-network) on ``eval_train``."""

        def run():
            from facecraft.metrics.evalnet import EvalNet, train_evalnet

            opts = dict(self.cfg.eval.get("evalnet", {}))
            stem = self.run_dir / "models" / f"evalnet-{self.private_key(opts)}"
            if (stem.parent / (stem.name + ".json")).exists():
                return EvalNet.load(stem, device=self.device), True, {}
            tr = self.private.eval_train
            net = train_evalnet(
                tr.images,
                tr.identities,
                num_identities=tr.num_identities,
                device=self.device,
                seed=self.cfg.seed,
                progress=self.progress,
                checkpoint_stem=stem.parent / (stem.name + "-train"),
                **opts,
            )
            net.save(stem)
            return net, False, {}

        return self._timed("evalnet", run)

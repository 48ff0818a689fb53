"""The RLDS schema of the tabletop datasets and the TFDS builder that writes them (array_record files).

One example = one episode, in the RLDS layout (github.com/google-research/rlds):

    steps: Dataset of
      observation: {rgb: uint8[H, W, 3], rgb_wrist (if recorded), state: f32[23] (privileged), task: i32}
      action: f32[5]            the action taken at this observation (zeros at the last step)
      reward: f32               the handcrafted reward that action earned (0 at the last step)
      discount: f32             1, and 0 at a terminal last step
      is_first, is_last, is_terminal: bool   (is_terminal: the episode ended in success)
      success: bool             the simulator's success signal at this observation (done labels)
      language_instruction: str
    episode_metadata: {episode_id, task, task_id, split, policy, noise, success, length, scene: {...}}

Images are uint8 Tensor features, not Image features, so the dataset reads and writes without TensorFlow
(`builder.as_data_source()` or `tfds.builder_from_directory(path)`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterator, Mapping

import jax
import numpy as np
import tensorflow_datasets as tfds

from rsr.envs.tabletop import scenes

NAME = "rsr_tabletop"
VERSION = "1.0.0"


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """What a dataset's arrays look like; a loader checks a dataset against the spec its config expects."""

  height: int
  width: int
  cameras: tuple[str, ...]  # "front" fills observation/rgb; others observation/rgb_<name>
  state_dim: int
  action_dim: int
  scene_shapes: Mapping[str, tuple[tuple[int, ...], str]]  # SceneParams field -> (shape, dtype name)

  def as_dict(self) -> dict:
    d = dataclasses.asdict(self)
    d["cameras"] = list(self.cameras)
    d["scene_shapes"] = {k: [list(s), t] for k, (s, t) in self.scene_shapes.items()}
    return d

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> "DatasetSpec":
    return cls(height=int(d["height"]), width=int(d["width"]), cameras=tuple(d["cameras"]),
               state_dim=int(d["state_dim"]), action_dim=int(d["action_dim"]),
               scene_shapes={k: (tuple(s), t) for k, (s, t) in d["scene_shapes"].items()})


def camera_key(camera: str) -> str:
  return "rgb" if camera == "front" else f"rgb_{camera}"


def scene_shapes() -> dict[str, tuple[tuple[int, ...], str]]:
  """Shapes and dtypes of one SceneParams, from the scene sampler itself (no copy to drift)."""

  # An abstract key: a concrete one would run (and compile) a program just to be looked at.
  shapes = jax.eval_shape(lambda k: scenes.sample(k, "id"), jax.ShapeDtypeStruct((2,), np.uint32))
  return {f.name: (tuple(getattr(shapes, f.name).shape), np.dtype(getattr(shapes, f.name).dtype).name)
          for f in dataclasses.fields(shapes)}


def features(spec: DatasetSpec) -> tfds.features.FeaturesDict:
  image = tfds.features.Tensor(shape=(spec.height, spec.width, 3), dtype=np.uint8)
  observation = {camera_key(c): image for c in spec.cameras}
  observation["state"] = tfds.features.Tensor(shape=(spec.state_dim,), dtype=np.float32)
  observation["task"] = np.int32
  return tfds.features.FeaturesDict({
      "steps": tfds.features.Dataset({
          "observation": observation,
          "action": tfds.features.Tensor(shape=(spec.action_dim,), dtype=np.float32),
          "reward": np.float32,
          "discount": np.float32,
          "is_first": np.bool_,
          "is_last": np.bool_,
          "is_terminal": np.bool_,
          "success": np.bool_,
          "language_instruction": tfds.features.Text(),
      }),
      "episode_metadata": {
          "episode_id": tfds.features.Text(),
          "task": tfds.features.Text(),
          "task_id": np.int32,
          "split": tfds.features.Text(),  # the scene split: id or an ood_* family
          "policy": tfds.features.Text(),  # expert | explore
          "noise": np.float32,
          "success": np.bool_,
          "length": np.int32,  # number of steps
          "scene": {k: tfds.features.Tensor(shape=s, dtype=np.dtype(t)) for k, (s, t) in
                    spec.scene_shapes.items()},
      },
  })


# A generator of (key, example) per TFDS split name.
ExampleSource = Mapping[str, Callable[[], Iterator[tuple[str, dict]]]]


class _LocalInfo(tfds.core.DatasetInfo):
  """DatasetInfo of a dataset made here, never on TFDS's public bucket: the base class looks there for
  every builder whose directory is not written yet, through an empty temporary directory (/tmp/tmp*tfds)
  that it leaves behind, one per collection."""

  def initialize_from_bucket(self) -> None:
    pass


class RsrTabletop(tfds.core.GeneratorBasedBuilder):
  """Writes tabletop episodes in the RLDS schema. Reading needs no builder class:
  `tfds.builder_from_directory(path)` or `data_pipelines.dataset.open_dataset(path)`."""

  VERSION = tfds.core.Version(VERSION)
  RELEASE_NOTES = {str(VERSION): "Tabletop episodes (push, pick, stack, place) from the MJX simulator."}

  def __init__(self, *, spec: DatasetSpec, examples: ExampleSource, **kwargs):
    self._spec = spec
    self._examples = examples
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return _LocalInfo(
        builder=self, description=__doc__, features=features(self._spec),
        homepage="https://github.com/google-research/rlds",
        metadata=tfds.core.MetadataDict(spec=self._spec.as_dict()))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {split: self._generate_examples(split) for split in self._examples}

  def _generate_examples(self, split):
    yield from self._examples[split]()


def episode_example(steps: Mapping[str, np.ndarray], meta: Mapping[str, Any], instruction: str) -> dict:
  """One RLDS example from an episode's arrays.

  steps: {"obs": {key: [L, ...]}, "action": f32[L, A], "reward": f32[L], "success": bool[L]} where the
  last step's action and reward are already padding; meta: the episode_metadata fields.
  """
  n = len(steps["success"])
  is_last = np.arange(n) == n - 1
  terminal = is_last & bool(steps["success"][-1])
  return {
      "steps": {
          "observation": dict(steps["obs"]),
          "action": steps["action"].astype(np.float32),
          "reward": steps["reward"].astype(np.float32),
          "discount": np.where(terminal, 0.0, 1.0).astype(np.float32),
          "is_first": np.arange(n) == 0,
          "is_last": is_last,
          "is_terminal": terminal,
          "success": steps["success"].astype(bool),
          "language_instruction": [instruction] * n,
      },
      "episode_metadata": dict(meta),
  }

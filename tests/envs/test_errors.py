"""Bad input gets an error naming the bad value and the valid choices, before anything compiles."""

import jax
import jax.numpy as jnp
import pytest

from rsr import envs
from rsr.envs import wrappers
from rsr.envs.tabletop import scenes


def test_unknown_task_lists_valid_tasks():
  with pytest.raises(ValueError, match="'stack_cubes'.*push_cube, pick_cube, stack_cube, place_cube"):
    envs.make("stack_cubes")


def test_unknown_split_lists_valid_splits():
  with pytest.raises(ValueError, match="'ood_texture'.*id, ood_color, ood_table"):
    scenes.sample_batch(jax.random.PRNGKey(0), "ood_texture", 2)


@pytest.mark.parametrize("size", [0, -64])
@pytest.mark.parametrize("field", ["height", "width"])
def test_non_positive_image_size(field, size):
  with pytest.raises(ValueError, match=f"{field} must be a positive integer, got {size}"):
    envs.make("pick_cube", **{field: size})


def test_unknown_option_and_camera():
  with pytest.raises(ValueError, match="'colour'.*valid options: cameras"):
    envs.make("pick_cube", colour="red")
  with pytest.raises(ValueError, match="cameras must be distinct names from \\('front', 'wrist'\\)"):
    envs.make("pick_cube", cameras=("front", "top"))


def test_wrong_action_shape_is_named_at_trace_time():
  env = envs.make("push_cube", height=8, width=8)
  scene = scenes.sample(jax.random.PRNGKey(0), "id")
  # eval_shape traces without compiling: the error must come from tracing.
  state = jax.eval_shape(env.reset, jax.random.PRNGKey(0), scene)
  with pytest.raises(ValueError, match=r"action has shape \(4,\); expected \(5,\)"):
    jax.eval_shape(env.step, state, jnp.zeros(4))
  batched = wrappers.Vmap(env)
  states = jax.eval_shape(batched.reset, jax.random.split(jax.random.PRNGKey(0), 3),
                          scenes.sample_batch(jax.random.PRNGKey(0), "id", 3))
  with pytest.raises(ValueError, match=r"action has shape \(3, 6\); expected \(5,\)"):
    jax.eval_shape(batched.step, states, jnp.zeros((3, 6)))

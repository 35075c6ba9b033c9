"""Every knob of `openr train rl`, with its default and help text."""

from __future__ import annotations

from dataclasses import dataclass, field

from openr.hardware import DTYPES
from openr.rl.env import REWARDS
from openr.tasks.problem import STEP_SEPARATOR

ALGORITHMS = ("grpo", "ppo", "expert-iteration")
MAX_DRAWS_PER_ROUND = 16  # dynamic sampling's draws of questions in one round, at most
ROLLOUTS = ("solution", "step")
ROUND_SCHEDULES = ("constant", "cosine")
OPTIMIZERS = ("adamw", "muon")


@dataclass(frozen=True)
class RLConfig:
    algo: str = field(default="grpo", metadata={"help": "grpo: group-normalised advantages, no critic; ppo: a "
                                                         "value head and GAE over steps; expert-iteration: keep "
                                                         "the verified-correct samples of each round and "
                                                         "fine-tune on them (rejection-sampling fine-tuning)."})
    accept_min_prm: float = field(default=0.0, metadata={"help": "expert-iteration: keep a verified-correct "
                                                                  "sample only if the PRM scores every one of its "
                                                                  "steps at least this (a step filter: a right "
                                                                  "answer can come from slips that cancel out); "
                                                                  "needs a --reward with prm. 0: answer only."})
    reward: str = field(default="outcome", metadata={"help": "prm: the PRM's score of each new step (OpenR's "
                                                              "choice); outcome: 1 for a correct boxed answer; "
                                                              "prm+outcome: both."})
    iterations: int = field(default=200, metadata={"help": "Rollout + update rounds: what is trained."})
    questions_per_iteration: int = field(default=16, metadata={"help": "Questions sampled per round."})
    group_size: int = field(default=8, metadata={"help": "Episodes per question (GRPO's G; PPO samples as many)."})
    rollout: str = field(default="solution", metadata={"help": "solution: one engine call samples each episode's "
                                                                "whole solution, played into the environment step "
                                                                "by step; step: one engine call per step of every "
                                                                "live episode (re-sends each growing prefix)."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature of the rollouts."})
    learning_rate: float = field(default=3e-5, metadata={"help": "AdamW learning rate (constant after warmup). On "
                                                                  "openr-arith one round at 2e-4 took held-out "
                                                                  "accuracy from 0.43 to 0.18, 8e-5 lowered it "
                                                                  "over 10 rounds, 3e-5 held it."})
    optimizer: str = field(default="adamw", metadata={"help": "adamw: AdamW on every weight; muon: the optimizer "
                                                               "the policy was trained with (`openr train sft`'s "
                                                               "Muon on the hidden matrices, AdamW on embedding and "
                                                               "norms, both at --learning-rate, SFT's weight decay). "
                                                               "One expert-iteration round in SFT's loop at 1e-4 "
                                                               "lifted arith-val 3 points once (bench/results/"
                                                               "rl_rft_control.json), another draw not at all "
                                                               "(bench/results/rl_ei_cosine)."})
    warmup_iterations: int = field(default=5, metadata={"help": "Rounds of linear learning-rate warmup "
                                                                "(--round-schedule constant)."})
    round_schedule: str = field(default="constant", metadata={"help": "constant: one learning rate through each "
                                                                       "round, after --warmup-iterations; cosine: "
                                                                       "each round's update is a fine-tune of its "
                                                                       "own, as `openr train sft`'s loop: fresh "
                                                                       "optimizer state, linear warmup over "
                                                                       "--round-warmup-steps optimizer steps, "
                                                                       "cosine decay toward a tenth of "
                                                                       "--learning-rate by the round's end "
                                                                       "(--warmup-iterations unused)."})
    round_warmup_steps: int = field(default=10, metadata={"help": "--round-schedule cosine: optimizer steps of "
                                                                   "linear warmup at the start of each round."})
    update_epochs: int = field(default=1, metadata={"help": "Passes over each round's episodes."})
    minibatch_size: int = field(default=32, metadata={"help": "Episodes per forward/backward pass."})
    optimizer_batch_size: int = field(default=0, metadata={"help": "Episodes per optimizer step: the gradients "
                                                                    "of minibatches are accumulated up to it, so "
                                                                    "a step averages out the noise of which "
                                                                    "samples were drawn (0: one minibatch)."})
    dynamic_sampling: bool = field(default=False, metadata={"help": "GRPO (as DAPO): drop the groups whose rewards "
                                                                     "are all equal (they carry no signal) and "
                                                                     "draw more questions until the round holds "
                                                                     "questions-per-iteration groups with signal, "
                                                                     f"at most {MAX_DRAWS_PER_ROUND} draws."})
    edge_of_competence: bool = field(default=False, metadata={"help": "Skip questions whose samples in earlier "
                                                                       "rounds were all right or all wrong: train "
                                                                       "where the pass rate is strictly between 0 "
                                                                       "and 1."})
    gradient_signal: bool = field(default=True, metadata={"help": "Measure each round's gradient signal: the "
                                                                   "cosine between the policy gradients of two "
                                                                   "halves of its batch (one more backward pass)."})
    clip: float = field(default=0.2, metadata={"help": "PPO/GRPO ratio clip epsilon."})
    kl_coef: float = field(default=0.02, metadata={"help": "Weight of the KL penalty to the starting policy "
                                                            "(0: no reference model)."})
    entropy_coef: float = field(default=0.0, metadata={"help": "Weight of the entropy bonus."})
    gamma: float = field(default=1.0, metadata={"help": "PPO: discount per step."})
    lam: float = field(default=0.95, metadata={"help": "PPO: GAE lambda."})
    value_coef: float = field(default=0.5, metadata={"help": "PPO: weight of the value loss."})
    value_learning_rate: float = field(default=1e-3, metadata={"help": "PPO: AdamW learning rate of the value "
                                                                        "head, which starts from zero and must "
                                                                        "catch up with returns of scale 1-6."})
    value_clip: float = field(default=0.0, metadata={"help": "PPO: clip of the value change per update (0: off; "
                                                                  "a clip of 0.2 on returns up to ~5 kept the "
                                                                  "critic from fitting)."})
    critic_warmup_iterations: int = field(default=2, metadata={"help": "PPO: first rounds in which only the value "
                                                                        "head learns, so advantages come from a "
                                                                        "critic that fits; its bias starts at the "
                                                                        "first round's mean return."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Global gradient-norm clip."})
    max_steps: int = field(default=12, metadata={"help": "Steps per episode before truncation."})
    max_step_tokens: int = field(default=64, metadata={"help": "Longest valid step in tokens."})
    max_episode_tokens: int = field(default=384, metadata={"help": "Solution tokens before truncation."})
    step_separator: str = field(default=STEP_SEPARATOR, metadata={"help": "What the policy writes between "
                                                                           "reasoning steps, where each step (an "
                                                                           "action) ends; backslash escapes read, "
                                                                           "as `openr serve --step-separator`: "
                                                                           "'\\n' for a chat model that writes a "
                                                                           "step a line (a blank line between "
                                                                           "them joins the next step). Default: "
                                                                           "%(default)r, a blank line."})
    train_problems: int = field(default=20_000, metadata={"help": "Arith training problems to draw from "
                                                                   "(ignored with --dataset)."})
    eval_problems: int = field(default=200, metadata={"help": "Held-out problems graded greedily at each eval."})
    eval_max_tokens: int = field(default=256, metadata={"help": "Tokens of each greedy held-out reply (a "
                                                                 "reply cut before its answer is wrong): 256 "
                                                                 "fits arith; a chat model's solutions are "
                                                                 "longer."})
    eval_every: int = field(default=10, metadata={"help": "Rounds between held-out evaluations."})
    save_every: int = field(default=10, metadata={"help": "Rounds between resumable checkpoints."})
    seed: int = field(default=0, metadata={"help": "Seed of problem order, sampling and minibatches."})
    dtype: str = field(default="float32", metadata={"help": "float32 (the same run on any CPU), bfloat16 or auto."})
    max_minutes: float = field(default=0.0, metadata={"help": "Opt-in wall-clock cap (0: none); when it binds "
                                                               "the run stops loudly and says so in summary.json."})

    def __post_init__(self):
        if self.algo not in ALGORITHMS:
            raise ValueError(f"algo must be one of {ALGORITHMS}, got {self.algo!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.round_schedule not in ROUND_SCHEDULES:
            raise ValueError(f"round_schedule must be one of {ROUND_SCHEDULES}, got {self.round_schedule!r}")
        if self.rollout not in ROLLOUTS:
            raise ValueError(f"rollout must be one of {ROLLOUTS}, got {self.rollout!r}")
        if self.reward not in REWARDS:
            raise ValueError(f"reward must be one of {REWARDS}, got {self.reward!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {self.dtype!r}")
        if self.optimizer_batch_size < 0 or self.critic_warmup_iterations < 0:
            raise ValueError("optimizer_batch_size and critic_warmup_iterations must be >= 0")
        for name in ("iterations", "questions_per_iteration", "group_size", "update_epochs", "minibatch_size",
                     "max_steps", "max_step_tokens", "max_episode_tokens", "train_problems", "eval_problems",
                     "eval_max_tokens", "eval_every", "save_every", "round_warmup_steps"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.algo == "grpo" and self.group_size < 2:
            raise ValueError("GRPO compares samples of a question: group_size must be at least 2")
        if self.learning_rate <= 0 or self.value_learning_rate <= 0 or self.temperature <= 0 or \
                not 0 < self.clip < 1:
            raise ValueError("need learning rates > 0, temperature > 0 and 0 < clip < 1")
        for name in ("kl_coef", "entropy_coef", "value_coef", "value_clip", "max_grad_norm", "max_minutes",
                     "warmup_iterations"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if not 0 <= self.accept_min_prm <= 1:
            raise ValueError("accept_min_prm must be in [0, 1]")
        if self.accept_min_prm and (self.algo != "expert-iteration" or self.reward == "outcome"):
            raise ValueError("accept_min_prm filters expert iteration's samples by their PRM scores: it needs "
                             "algo expert-iteration and a reward with prm (prm or prm+outcome)")
        if not self.step_separator:
            raise ValueError("step_separator cannot be empty")
        if self.seed < 0:
            raise ValueError("seed must be >= 0")
        if not 0 <= self.gamma <= 1 or not 0 <= self.lam <= 1:
            raise ValueError("gamma and lam must be in [0, 1]")

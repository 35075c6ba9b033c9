"""Online RL over reasoning steps: the gymnasium environment, rollouts through the engine, PPO and GRPO."""

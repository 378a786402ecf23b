"""Physical-deception RL pillar: jitted environment, MADDPG, SOO fine-tuning, metrics."""

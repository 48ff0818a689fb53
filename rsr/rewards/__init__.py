"""Rewards for RL inside the world model.

    distance.py     perceptual distances in [0, 1]: the tokenizer's own features (the endogenous default),
                    pixels, FSQ token embeddings, and real LPIPS from converted weights
    endogenous.py   RewardConfig and the paper's reward r = w_align (1 - d(frame, goal)) + w_done 1[done >= tau]
    learned.py      the exogenous baseline: a reward head trained on the dataset's handcrafted rewards, run on
                    the imagined frame's tokens (stage "reward")
"""

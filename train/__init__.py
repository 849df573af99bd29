"""train: detector SFT and GRPO scripts and detector inference.

Not implemented yet (issue 6). The GRPO reward they will use is ``sdg_data.reward.SDGReward``.
"""

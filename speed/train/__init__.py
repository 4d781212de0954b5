"""Training of the generator LLMs: SFT (junior, revisor) and DPO (senior), merged outputs."""

"""Recipe orchestration: the typed recipe config (``asr.recipe.config``) that
``recipes/timit/run.sh`` resolves before running its stages."""

"""The episode language: an episode or series file (YAML) in, a validated Episode out (load, with the
settings resolved once), its JSON Schema (schema), and an article turned into an episode file (article).
Every error names file:line:col and the field. Imports the audio, picture and speech lanes only to probe
what a script names (music, visuals, takes)."""

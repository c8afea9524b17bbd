"""The audio lane: the narrations and the plan in, one mastered AAC track out. sound masters and meters
(loudness, true peak), music reads and loops the bed and plans its ducking under the voice, track
assembles and encodes the whole track in chunks; audiofile probes audio files without numpy (a no-op
imports nothing heavy). Uses the video lane's ffmpeg only."""

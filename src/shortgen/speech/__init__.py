"""The voices: narration text in, audio and word timings out. narrate speaks with pyttsx3 and espeak-ng
in worker processes (espeak_worker), cached by text, voice and rate; record turns a creator's own take
into the same thing, decoded at its own rate and aligned offline against the engine's speech of the text.
Uses the audio lane's decoding and levels, and the video lane's ffmpeg."""

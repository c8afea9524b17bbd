"""The pictures: the plan in, raw yuv420p frames out, one distinct picture per state. draw makes cards,
caption tiles, thumbnail and cover with Pillow; media probes and decodes pictures and clips; compose moves
a picture or plays a clip under the card; frames turns states into the pictures the encoder is fed;
storyboard draws the contact sheet from tiles taken on the way. Uses the audio lane's probe and the
video lane's ffmpeg."""

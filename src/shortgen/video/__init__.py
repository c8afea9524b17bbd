"""The video lane: frames in, H.264 and MP4 out. encode builds every ffmpeg command line (pure functions
returning list[str]) and runs x264 over the distinct pictures; h264 and mp4 read and write the
bitstream and the container (parameter sets, P-skip frames, the sample table) so that runs can be
cached alone and stitched. Imports no other lane."""

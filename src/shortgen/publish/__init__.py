"""What a user gets: the output set written as one (outputs: captions, manifest, atomic replacement),
the upload package (package: title, description, chapters, tags), and the gallery of a series. Uses the
video lane's MP4 reader."""

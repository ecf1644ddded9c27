"""The `mnv2` command (`main`) and what only it uses: prediction on files, pictures, the demo, profiles."""

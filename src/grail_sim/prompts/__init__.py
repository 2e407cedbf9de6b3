"""The prompts stage: leak-free chat-prompt datasets for next-video choice and opinion shift.

`grail_sim.prompts.render` holds the one prompt builder; `build` makes the datasets of one issue,
`guards` the leak guards, `importer` reads external datasets, `settings` and `profiles` the inputs.
"""

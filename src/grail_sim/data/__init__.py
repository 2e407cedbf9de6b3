"""The data stage: capsule readers, the clean stage, pre-cleaned datasets and the demo capsule."""

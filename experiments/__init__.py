"""The paper's experiment grid as data, presets, and the runner that turns them into records."""

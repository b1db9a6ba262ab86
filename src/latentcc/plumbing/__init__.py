"""Infrastructure every part uses: errors, array and batch handling, atomic writes, locks, progress, seeding, assets."""

from emotion_lightning.cli import main

main()

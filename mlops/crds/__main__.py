from mlops.crds import main

main()

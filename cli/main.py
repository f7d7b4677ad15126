def main(argv=None):
    print("ok")

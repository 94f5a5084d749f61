# Convert a checkpoint saved by plain mmengine into one that loads with
# torch.load(weights_only=True), as mmseg_fnm's tools require.
#
# Reading the input unpickles it without restrictions, which can execute
# arbitrary code hidden in the file: only convert files you trust.
import argparse
import sys

from mmseg_fnm.utils import convert_checkpoint


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Convert a checkpoint written by plain mmengine into one '
        'that loads with torch.load(weights_only=True)')
    parser.add_argument('src', help='checkpoint to convert')
    parser.add_argument('dst', help='path of the converted checkpoint')
    parser.add_argument(
        '--trust-checkpoint',
        action='store_true',
        help='confirm that SRC comes from a trusted source: it is loaded '
        'with weights_only=False, which can execute code hidden in it')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if not args.trust_checkpoint:
        sys.exit(f'Refusing to convert {args.src}: reading it unpickles it '
                 'without restrictions, which can execute code hidden in '
                 'the file. If you trust its source, run again with '
                 '--trust-checkpoint.')
    convert_checkpoint(args.src, args.dst, trust_checkpoint=True)
    print(f'Wrote {args.dst}; it loads with torch.load(weights_only=True).')


if __name__ == '__main__':
    main()

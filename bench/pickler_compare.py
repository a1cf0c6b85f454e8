"""cloudpickle against dill on the session states of issue 17 (why snapshot.py
uses cloudpickle): functions, a lambda, a closure with state, classes and a
dataclass, a namedtuple and a dict of a million ints, pickled from a
__main__-like namespace and loaded into a fresh one. Prints each one's size,
dump and load times, and which checks of the restored state hold.

    /usr/bin/python3 bench/pickler_compare.py   (python3-cloudpickle, python3-dill)

The last check is that a restored session function reads the restored
namespace: dill does it by itself; cloudpickle does not (its functions carry
their own globals), which snapshot.py fixes by binding session functions to
the restored namespace.
"""
import time, types, sys, pickle, collections
import cloudpickle, dill

src = '''
import math, json
from dataclasses import dataclass
big = {i: i for i in range(1_000_000)}
def f(x): return x * scale + math.floor(1.5)
scale = 3
g = lambda y: f(y) + 1
class Point:
    def __init__(self, x, y): self.x, self.y = x, y
    def norm(self): return math.hypot(self.x, self.y)
@dataclass
class Item:
    name: str
    qty: int = 1
p = Point(3, 4)
items = [Item('a'), Item('b', 2)]
Pair = __import__('collections').namedtuple('Pair', 'a b')
pair = Pair(1, 2)
def counter():
    n = 0
    def inc():
        nonlocal n
        n += 1
        return n
    return inc
c = counter(); c(); c()
'''
def make_main():
    m = types.ModuleType('__main__')
    sys.modules['__main__'] = m
    exec(src, m.__dict__)
    return m

def state_of(m):
    return {k: v for k, v in m.__dict__.items() if not k.startswith('__') and not isinstance(v, types.ModuleType)}

def check(ns):
    ok = []
    ok.append(ns['f'](2) == 7)
    ok.append(ns['g'](2) == 8)
    ok.append(ns['p'].norm() == 5.0)
    ok.append(ns['items'][1].qty == 2)
    ok.append(ns['pair'].b == 2)
    ok.append(ns['c']() == 3)
    ok.append(len(ns['big']) == 1_000_000)
    # session functions see the restored namespace
    ns['scale'] = 10
    ok.append(ns['f'](2) == 21)
    return ok

for name, mod in (('cloudpickle', cloudpickle), ('dill', dill)):
    m = make_main()
    st = state_of(m)
    t0 = time.perf_counter()
    try:
        blob = mod.dumps(st)
    except Exception as e:
        print(name, 'dumps failed:', type(e).__name__, e); continue
    t1 = time.perf_counter()
    m2 = make_main()  # fresh namespace, then load into it
    for k in list(state_of(m2)): del m2.__dict__[k]
    try:
        restored = (dill if name == 'dill' else pickle).loads(blob)
    except Exception as e:
        print(name, 'loads failed:', type(e).__name__, e); continue
    t2 = time.perf_counter()
    m2.__dict__.update(restored)
    ns = m2.__dict__
    try:
        res = check(ns)
    except Exception as e:
        res = ['error %s: %s' % (type(e).__name__, e)]
    print('%-11s %7.1f KB  dumps %6.1f ms  loads %6.1f ms  checks %s' % (name, len(blob)/1024, (t1-t0)*1e3, (t2-t1)*1e3, res))

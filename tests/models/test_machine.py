"""What the machine is: /proc/cpuinfo parsing, usable cores, versions and the key that
keeps a measurement from being reused on another CPU, core count or package set."""

from __future__ import annotations

from terramask.models.machine import CpuInfo, cpu_info, machine_key, package_versions, parse_cpuinfo, usable_cores

CPUINFO = """processor	: 0
vendor_id	: GenuineIntel
model name	: Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz
flags		: fpu sse2 avx2 fma avx512f avx512_vnni amx_int8 f16c
processor	: 1
model name	: something else
flags		: fpu
"""


def test_parse_cpuinfo_reads_the_first_processor():
    info = parse_cpuinfo(CPUINFO)
    assert info.model == "Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz"
    assert info.flags == ("amx_int8", "avx2", "avx512_vnni", "avx512f", "f16c", "fma", "fpu", "sse2")
    assert info.notable() == ("avx2", "fma", "avx512f", "avx512_vnni", "amx_int8", "f16c")
    arm = parse_cpuinfo("processor\t: 0\nFeatures\t: fp asimd sve\nCPU part\t: 0xd40\n")
    assert arm.flags == ("asimd", "fp", "sve") and arm.model


def test_this_machine():
    assert cpu_info().model and usable_cores() >= 1
    versions = package_versions(("terramask", "no-such-distribution-xyz"))
    assert versions["terramask"] and versions["no-such-distribution-xyz"] is None


def test_the_key_changes_with_cpu_cores_and_versions():
    cpu = CpuInfo("X", ("avx2",))
    base = machine_key(cpu, 2, {"torch": "2.5"})
    assert base == machine_key(CpuInfo("X", ("avx2",)), 2, {"torch": "2.5"}) and len(base) == 16
    assert len({base, machine_key(CpuInfo("X", ("avx2", "avx512f")), 2, {"torch": "2.5"}),
                machine_key(cpu, 4, {"torch": "2.5"}), machine_key(cpu, 2, {"torch": "2.6"}),
                machine_key(CpuInfo("Y", ("avx2",)), 2, {"torch": "2.5"})}) == 5

using Modular.Abstractions.WireGuard;
using Modular.Core.Config;
using Modular.Core.Engine;

namespace Modular.Core.Tests.Engine;

/// <summary>
/// Issue 13, "started without root, the agent registers first": what `modular up` needs from the host is checked before
/// anything registers, through a probe a test answers for the host.
/// </summary>
public sealed class StartupPreflightTests
{
    private const ulong AllCaps = 0x1ff_ffff_ffff;
    private const ulong NoNetAdmin = AllCaps & ~(1UL << StartupPreflight.CapNetAdmin);

    private static AgentConfig Config(WgInterfaceMode mode = WgInterfaceMode.Userspace, int port = 51820)
        => new() { ManagementUrls = [new Uri("https://management.invalid")], Interface = new InterfaceConfig { Name = "mdl0", Mode = mode, Port = port } };

    [Fact]
    public void Started_without_root_a_host_that_gives_everything_passes()
        => Assert.Null(StartupPreflight.Check(Config(), new FakeProbe()));

    [Fact]
    public void Started_without_root_missing_CAP_NET_ADMIN_is_one_line_that_names_it()
    {
        var problem = StartupPreflight.Check(Config(), new FakeProbe { Caps = NoNetAdmin });

        Assert.NotNull(problem);
        Assert.Contains("CAP_NET_ADMIN", problem, StringComparison.Ordinal);
        Assert.DoesNotContain('\n', problem);
    }

    [Fact]
    public void Started_without_root_an_unreadable_capability_set_is_left_to_the_interface_to_report()
        => Assert.Null(StartupPreflight.Check(Config(), new FakeProbe { Caps = null }));

    [Fact]
    public void Started_without_root_userspace_mode_needs_dev_net_tun_and_kernel_mode_does_not()
    {
        var probe = new FakeProbe { Tun = "missing: load the tun module (modprobe tun)" };

        Assert.Contains("/dev/net/tun (missing", StartupPreflight.Check(Config(), probe), StringComparison.Ordinal);
        Assert.Null(StartupPreflight.Check(Config(WgInterfaceMode.Kernel), probe));
    }

    [Fact]
    public void Started_without_root_a_port_in_use_is_named_kernel_mode_also_the_ice_port_above_it()
    {
        var probe = new FakeProbe { Busy = [51821] };

        Assert.Null(StartupPreflight.Check(Config(), probe)); // userspace: ICE shares WireGuard's port
        Assert.Contains("UDP port 51821", StartupPreflight.Check(Config(WgInterfaceMode.Kernel), probe), StringComparison.Ordinal);
        Assert.Null(StartupPreflight.Check(Config(port: 0), new FakeProbe { Busy = [0] })); // any free port: nothing to check
    }

    [Fact]
    public void Started_without_root_everything_missing_is_named_in_the_one_line()
    {
        var problem = StartupPreflight.Check(Config(), new FakeProbe { Caps = 0, Tun = "Permission denied", Busy = [51820] });

        Assert.NotNull(problem);
        Assert.Contains("CAP_NET_ADMIN", problem, StringComparison.Ordinal);
        Assert.Contains("/dev/net/tun (Permission denied)", problem, StringComparison.Ordinal);
        Assert.Contains("UDP port 51820", problem, StringComparison.Ordinal);
        Assert.DoesNotContain('\n', problem);
    }

    [Fact]
    public void Started_without_root_this_process_reads_its_own_capabilities()
    {
        // The real probe on this host: /proc/self/status has a CapEff line (tests run on Linux).
        Assert.NotNull(LinuxHostProbe.Instance.EffectiveCapabilities());
    }

    private sealed class FakeProbe : IHostProbe
    {
        public ulong? Caps { get; init; } = AllCaps;

        public string? Tun { get; init; }

        public int[] Busy { get; init; } = [];

        public ulong? EffectiveCapabilities() => Caps;

        public string? TunDeviceProblem() => Tun;

        public bool UdpPortFree(int port) => !Busy.Contains(port);
    }
}

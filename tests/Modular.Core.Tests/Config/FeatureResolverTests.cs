using Modular.Core.Config;
using Modular.Core.Status;

namespace Modular.Core.Tests.Config;

public sealed class FeatureResolverTests
{
    private static readonly bool?[] Values = [null, false, true];

    /// <summary>Every combination of the five sources: the highest one that says something wins, in either direction.</summary>
    public static TheoryData<bool?, bool?, bool?, bool?, bool?> AllCombinations()
    {
        var data = new TheoryData<bool?, bool?, bool?, bool?, bool?>();
        foreach (var flag in Values)
        {
            foreach (var environment in Values)
            {
                foreach (var ui in Values)
                {
                    foreach (var config in Values)
                    {
                        foreach (var account in Values)
                        {
                            data.Add(flag, environment, ui, config, account);
                        }
                    }
                }
            }
        }

        return data;
    }

    [Theory]
    [MemberData(nameof(AllCombinations))]
    public void The_highest_source_that_says_something_decides(bool? flag, bool? environment, bool? ui, bool? config, bool? account)
    {
        (bool? Value, string Source)[] ranked =
        [
            (flag, FeatureSource.Flag),
            (environment, FeatureSource.Environment),
            (ui, FeatureSource.Ui),
            (config, FeatureSource.Config),
            (account, FeatureSource.Account),
            (false, FeatureSource.Default),
        ];
        var (value, source) = ranked.First(r => r.Value is not null);

        var decision = FeatureResolver.Resolve(new LocalToggle(flag, environment, config), ui, account);

        Assert.Equal(new FeatureDecision(value!.Value, source), decision);
    }

    [Theory]
    [InlineData(null, null, null, false, true, false, "config")]      // a machine opts out of an account that turns it on
    [InlineData(null, null, null, true, false, true, "config")]       // ... and in, when the account turns it off
    [InlineData(null, false, null, null, true, false, "environment")]
    [InlineData(null, true, null, null, false, true, "environment")]
    [InlineData(false, true, true, true, true, false, "flag")]
    [InlineData(true, false, false, false, false, true, "flag")]
    [InlineData(null, null, false, true, true, false, "ui")]           // the UI switch wins over the file
    [InlineData(null, false, true, null, null, false, "environment")]  // ... and loses to the environment
    [InlineData(null, null, null, null, true, true, "account")]
    [InlineData(null, null, null, null, false, false, "account")]
    [InlineData(null, null, null, null, null, false, "default")]
    public void Local_settings_override_the_account_in_either_direction(
        bool? flag, bool? environment, bool? ui, bool? config, bool? account, bool expected, string source)
        => Assert.Equal(new FeatureDecision(expected, source), FeatureResolver.Resolve(new LocalToggle(flag, environment, config), ui, account));

    private static AgentConfig Config(string toml)
        => AgentConfigLoader.Parse($"management_url = \"https://m.example\"\n{toml}\n", "agent.toml", new Dictionary<string, string?>(), new AgentConfigOverrides());

    [Fact]
    public void Every_feature_is_built_so_what_the_account_asks_for_is_on()
    {
        var byAccount = FeatureStatusBuilder.Build(Config("metrics = { listen = \"\" }"), null, new AccountFeatures(true, true, true, true));
        Assert.True(byAccount.LazyConnections);
        Assert.Equal("account", byAccount.LazyConnectionsSource);
        Assert.True(byAccount.Netflow); // built: on when the account asks and nothing in this run stands in the way
        Assert.Equal("account", byAccount.NetflowSource);
        Assert.True(byAccount.Rosenpass); // built (issue 15): in effect when the account asks
        Assert.Equal("account", byAccount.RosenpassSource);
        Assert.True(byAccount.RosenpassPermissive);
        Assert.Empty(NotBuiltYet.Reasons);
        Assert.Empty(byAccount.Unavailable);

        var optedOut = FeatureStatusBuilder.Build(Config("netflow = { enabled = false }\nfeatures = { lazy_connections = false }"), null, new AccountFeatures(true, true, false));
        Assert.False(optedOut.LazyConnections);
        Assert.Equal("config", optedOut.LazyConnectionsSource);
        Assert.Equal("config", optedOut.NetflowSource);
        Assert.Empty(optedOut.Unavailable); // the default metrics address asks for metrics, which are built (status.metrics says whether they serve)
    }

    [Fact]
    public void A_feature_this_run_cannot_provide_is_off_and_says_why_and_who_asked_for_it_but_only_while_asked_for()
    {
        var reasons = new Dictionary<string, string> { ["netflow"] = "no flow-sink plugin named \"netflow\" is loaded" };

        var byAccount = FeatureStatusBuilder.Build(Config("metrics = { listen = \"\" }"), null, new AccountFeatures(Flows: true), reasons);
        Assert.False(byAccount.Netflow);
        Assert.Equal("requested by the account, not available: no flow-sink plugin named \"netflow\" is loaded", byAccount.Unavailable["netflow"]);

        var byConfig = FeatureStatusBuilder.Build(Config("metrics = { listen = \"\" }\nnetflow = { enabled = true }"), null, new AccountFeatures(Flows: false), reasons);
        Assert.False(byConfig.Netflow);
        Assert.Equal("no flow-sink plugin named \"netflow\" is loaded", byConfig.Unavailable["netflow"]);

        var notAsked = FeatureStatusBuilder.Build(Config("metrics = { listen = \"\" }"), null, new AccountFeatures(Flows: false), reasons);
        Assert.False(notAsked.Netflow);
        Assert.Empty(notAsked.Unavailable);
    }

    [Fact]
    public void Rosenpass_asked_for_without_a_working_provider_is_off_permissive_included_and_says_why_beside_netflow()
    {
        var reasons = FeatureStatusBuilder.Merge(
            new Dictionary<string, string> { ["netflow"] = "no flow sink" },
            null,
            new Dictionary<string, string> { ["rosenpass"] = "no PSK provider plugin named \"rosenpass\" is loaded (available: (none))" });

        var byAccount = FeatureStatusBuilder.Build(Config("metrics = { listen = \"\" }"), null, new AccountFeatures(Flows: true, Rosenpass: true, RosenpassPermissive: true), reasons);
        Assert.False(byAccount.Rosenpass);
        Assert.False(byAccount.RosenpassPermissive);
        Assert.Equal("account", byAccount.RosenpassSource);
        Assert.Equal("requested by the account, not available: no PSK provider plugin named \"rosenpass\" is loaded (available: (none))", byAccount.Unavailable["rosenpass"]);
        Assert.Equal("requested by the account, not available: no flow sink", byAccount.Unavailable["netflow"]);

        var byConfig = FeatureStatusBuilder.Build(Config("metrics = { listen = \"\" }\nrosenpass = { enabled = true }"), null, new AccountFeatures(Rosenpass: false), reasons);
        Assert.False(byConfig.Rosenpass);
        Assert.Equal("no PSK provider plugin named \"rosenpass\" is loaded (available: (none))", byConfig.Unavailable["rosenpass"]);

        var off = FeatureStatusBuilder.Build(Config("metrics = { listen = \"\" }\nrosenpass = { enabled = false }"), null, new AccountFeatures(Rosenpass: true), reasons);
        Assert.False(off.Unavailable.ContainsKey("rosenpass"));
    }

    [Fact]
    public void The_ui_switch_is_a_local_setting_that_wins_over_the_file_and_the_account()
    {
        var status = FeatureStatusBuilder.Build(Config("features = { lazy_connections = true }"), false, new AccountFeatures(LazyConnections: true));
        Assert.False(status.LazyConnections);
        Assert.Equal("ui", status.LazyConnectionsSource);
    }
}
